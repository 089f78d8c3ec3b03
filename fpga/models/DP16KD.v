// Behavioural model of the ECP5 DP16KD block RAM as rtl/bram.py instantiates it, for
// simulation (Yosys ships only a black box of this cell).
//
// 1024 x 18: port A writes (DATA_WIDTH_A 18, both byte enables ADA1:0 high, WEA, CEA), port B
// reads (DATA_WIDTH_B 18, WEB low): the word at ADB13:4 is latched when CEB is high, and with
// REGMODE_B "OUTREG" registered again when OCEB is high; RSTB (RESETMODE "SYNC") clears the
// output register (reset wins over OCEB). A read of the word written in the same cycle returns
// the old word. The contents start at zero (the INITVAL parameters' default). Other widths, chip selects, writes on port B and reads on port A are not
// modelled; an instance that asks for them stops the simulation at time 0.
`default_nettype none
// String parameters compare at the width of the longer string.
/* verilator lint_off WIDTH */
module DP16KD (
    input  wire DIA0, DIA1, DIA2, DIA3, DIA4, DIA5, DIA6, DIA7, DIA8, DIA9, DIA10, DIA11, DIA12,
    DIA13, DIA14, DIA15, DIA16, DIA17,
    input  wire ADA0, ADA1, ADA2, ADA3, ADA4, ADA5, ADA6, ADA7, ADA8, ADA9, ADA10, ADA11, ADA12,
    ADA13,
    input  wire DIB0, DIB1, DIB2, DIB3, DIB4, DIB5, DIB6, DIB7, DIB8, DIB9, DIB10, DIB11, DIB12,
    DIB13, DIB14, DIB15, DIB16, DIB17,
    input  wire ADB0, ADB1, ADB2, ADB3, ADB4, ADB5, ADB6, ADB7, ADB8, ADB9, ADB10, ADB11, ADB12,
    ADB13,
    input  wire CEA, OCEA, CLKA, WEA, CSA0, CSA1, CSA2, RSTA,
    input  wire CEB, OCEB, CLKB, WEB, CSB0, CSB1, CSB2, RSTB,
    output wire DOA0, DOA1, DOA2, DOA3, DOA4, DOA5, DOA6, DOA7, DOA8, DOA9, DOA10, DOA11, DOA12,
    DOA13, DOA14, DOA15, DOA16, DOA17,
    output wire DOB0, DOB1, DOB2, DOB3, DOB4, DOB5, DOB6, DOB7, DOB8, DOB9, DOB10, DOB11, DOB12,
    DOB13, DOB14, DOB15, DOB16, DOB17
);
    parameter DATA_WIDTH_A = 18;
    parameter DATA_WIDTH_B = 18;
    parameter REGMODE_A = "NOREG";
    parameter REGMODE_B = "NOREG";
    parameter RESETMODE = "SYNC";
    parameter CSDECODE_A = "0b000";
    parameter CSDECODE_B = "0b000";
    // accepted for the instance's sake; they change nothing the model computes
    /* verilator lint_off UNUSEDPARAM */
    parameter ASYNC_RESET_RELEASE = "SYNC";
    parameter CLKAMUX = "CLKA";
    parameter CLKBMUX = "CLKB";
    parameter WRITEMODE_A = "NORMAL";
    parameter WRITEMODE_B = "NORMAL";
    parameter GSR = "DISABLED";
    /* verilator lint_on UNUSEDPARAM */

    generate
        if (DATA_WIDTH_A != 18 || DATA_WIDTH_B != 18 || REGMODE_A != "NOREG"
                || (REGMODE_B != "NOREG" && REGMODE_B != "OUTREG") || RESETMODE != "SYNC"
                || CSDECODE_A != "0b000" || CSDECODE_B != "0b000") begin : unsupported
            initial $fatal(1, "DP16KD model: only 18-bit ports, A writing, B reading");
        end
    endgenerate

    wire [17:0] dia = {DIA17, DIA16, DIA15, DIA14, DIA13, DIA12, DIA11, DIA10, DIA9,
        DIA8, DIA7, DIA6, DIA5, DIA4, DIA3, DIA2, DIA1, DIA0};
    wire [13:0] ada = {ADA13, ADA12, ADA11, ADA10, ADA9, ADA8, ADA7,
        ADA6, ADA5, ADA4, ADA3, ADA2, ADA1, ADA0};
    wire [13:0] adb = {ADB13, ADB12, ADB11, ADB10, ADB9, ADB8, ADB7,
        ADB6, ADB5, ADB4, ADB3, ADB2, ADB1, ADB0};
    reg [17:0] mem [0:1023];
    reg [17:0] latch, oreg;
    // The block's contents after configuration: its INITVAL parameters, all zero here.
    integer i;
    initial for (i = 0; i < 1024; i = i + 1) mem[i] = 18'd0;
    always @(posedge CLKA) begin
        if (CEA && WEA && ada[1:0] == 2'b11) mem[ada[13:4]] <= dia;
    end
    always @(posedge CLKB) begin
        if (CEB) latch <= mem[adb[13:4]];
        if (RSTB) oreg <= 18'd0;
        else if (OCEB) oreg <= latch;
    end
    wire [17:0] dob = REGMODE_B == "OUTREG" ? oreg : latch;
    assign {DOB17, DOB16, DOB15, DOB14, DOB13, DOB12, DOB11, DOB10, DOB9, DOB8, DOB7, DOB6, DOB5,
        DOB4, DOB3, DOB2, DOB1, DOB0} = dob;
    assign {DOA17, DOA16, DOA15, DOA14, DOA13, DOA12, DOA11, DOA10, DOA9, DOA8, DOA7, DOA6, DOA5,
        DOA4, DOA3, DOA2, DOA1, DOA0} = 18'd0;

    wire unused = &{1'b0, OCEA, RSTA, WEB, CSA0, CSA1, CSA2, CSB0, CSB1, CSB2, ada[3:2], adb[3:0],
                    DIB0, DIB1, DIB2, DIB3, DIB4, DIB5, DIB6, DIB7, DIB8, DIB9, DIB10, DIB11,
                    DIB12, DIB13, DIB14, DIB15, DIB16, DIB17, 1'b0};
endmodule
/* verilator lint_on WIDTH */
`default_nettype wire
